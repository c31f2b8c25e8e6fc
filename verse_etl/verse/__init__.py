"""VerSe: one scan in (case), its centroids and the VerSe'19 fracture grading table."""
