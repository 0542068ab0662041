"""Library code behind the scripts: image I/O, metrics, inference, data, training helpers."""
