"""Console views, one module per area. They validate input, call services and queries, and render."""
