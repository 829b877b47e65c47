"""The built-in search spaces, one YAML per task family; the build maps this folder into the package as
`autoplace.search_spaces`, so installed copies find them with importlib.resources."""
