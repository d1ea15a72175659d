"""irisflow: live market-data streams through a composable pipeline."""
