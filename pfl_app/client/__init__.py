"""Client-side logic of the personalized methods: data, state and the train/evaluate handlers."""
