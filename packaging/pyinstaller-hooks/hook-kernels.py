# PyInstaller hook for `kernels` (Hugging Face's kernel hub, a dependency of transformers 5.25+).
# pyinstaller-hooks-contrib 2026.9 has none. kernels reads kernels/_internals/python_depends.json when
# transformers imports it; without the file every Hugging Face model fails to load ("Cannot load
# dependency data, is `kernels` correctly installed?"). So: its data files and its metadata.
from PyInstaller.utils.hooks import collect_data_files, copy_metadata

datas = collect_data_files("kernels") + copy_metadata("kernels")
