"""From the survey to training batches: sample selection, download, extraction of
the emission-line windows, assembly of cubes.h5, the batch feed with augmentation
(``dataset``) and flux scaling."""
