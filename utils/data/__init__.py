"""Images in and out, synthetic rain (the rain families), paired datasets, dataset conversion."""
