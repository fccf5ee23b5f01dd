"""Input readers: images, video, COLMAP."""
