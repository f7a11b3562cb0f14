"""Panel routes (HTML) and the JSON API, one module per resource."""
