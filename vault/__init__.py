"""oncevault vault package."""
