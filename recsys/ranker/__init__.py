"""The ranker: model, training, weights on disk, sharding plan and executors."""
