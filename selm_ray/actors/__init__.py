"""Plain classes that run as Ray actors; `launch.py` is the one place that applies ray.remote."""
