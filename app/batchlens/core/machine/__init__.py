"""What a run runs on: the device, its memory (probes, peaks) and how busy the machine's cores are."""
