"""Worker processes: which task queue, which workflows and activities, and how they are tuned."""
