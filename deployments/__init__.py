"""Thin Ray Serve adapters over ``recsys`` objects, the app builder and serve configs."""
