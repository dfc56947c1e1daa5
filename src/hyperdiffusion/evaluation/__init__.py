"""Stage 5, evaluation: how good, how diverse and how new generated shapes are.

    metrics.py   Chamfer, EMD, MMD / COV / 1-NNA (PointFlow's definitions), normalisation modes
    fpd.py       Frechet PointNet++ distance and its feature network
    evaluate.py  the `evaluate` stage: generated clouds against a reference split -> metrics.json
    compare.py   the `compare` stage: every method trained, sampled and scored on one protocol
    surface_scores.py  fit quality: volume IoU with a bootstrap interval; Occupancy Networks' Chamfer-L1,
                       normal consistency and F-score of a mesh against the true surface
"""
