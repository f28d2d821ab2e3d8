"""oncevault consent package."""
