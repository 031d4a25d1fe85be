"""The BatchLens window. The only package that imports Qt and pyqtgraph; it never touches a tensor."""
