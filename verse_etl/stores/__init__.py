"""Volume stores: OME-Zarr written from slab streams (sharded Zarr v3), with the statistics computed
on the way (HU histogram, per-label statistics)."""
