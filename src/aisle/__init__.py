"""aisle: product classification from images and text."""
