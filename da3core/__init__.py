"""da3core: Depth Anything 3 and Video Depth Anything as a plain Python + torch library."""
