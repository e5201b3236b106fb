"""randfx's FX passes, one file each (installed as `randfx.passes`)."""
