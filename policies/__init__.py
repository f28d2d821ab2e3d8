"""oncevault policies package."""
