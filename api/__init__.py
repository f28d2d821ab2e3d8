"""oncevault api package."""
