"""Geometry as pure functions: affines and orientation, masks realigned to their image, a DICOM
series' slice geometry and verdict, gantry-tilt resampling."""
