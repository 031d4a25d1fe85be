"""What a run leaves in its output folder (predictions.jsonl, summary.json, run.json, the lock, output
files) and reading it back. Never imports run/."""
