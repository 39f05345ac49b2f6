"""The node canvas: scene items, the scene that mirrors the graph, and the view."""
