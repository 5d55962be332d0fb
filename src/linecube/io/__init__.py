"""Files in and out: MaNGA DRP paths and formats (LOGCUBE, drpall), the cubes.h5
contract and the emission-line list (``formats``), catalogues (``agn``), atomic writes."""
