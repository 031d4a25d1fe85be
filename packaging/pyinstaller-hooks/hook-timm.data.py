# PyInstaller hook for `timm.data`: timm's ImageNet class names and synsets (timm/data/_info/*.txt,
# read with pkgutil.get_data) and the pruned-model definitions (timm/models/_pruned/*.txt).
# pyinstaller-hooks-contrib's hook-timm.py only keeps timm's .py sources; it is left as it is (one hook
# per module), and this hook, for the submodule timm.data that every timm model imports, adds the data.
from PyInstaller.utils.hooks import collect_data_files

datas = collect_data_files("timm")
