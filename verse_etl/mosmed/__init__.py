"""MosMed CTLungCa-500 and its vertebral-fracture annotations: one study in (case), keypoint rows,
expert matching, consensus and Genant grades out."""
