"""From a folder to tensors: finding images, opening them guardedly, decoding (CPU or GPU), preprocessing
and preparing the next batches ahead. Never imports run/ or outputs/."""
