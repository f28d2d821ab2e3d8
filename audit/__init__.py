"""oncevault audit package."""
