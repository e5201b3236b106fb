"""randfx's FX passes, one file each (installed as `randfx.passes`).

`randfx.transform` runs, through `manager.PassManager` on a `manager.TransformContext`:
capture -> analyze -> select -> reparameterize -> lower -> emit [-> sparse_backward].
Each file's docstring states what the pass requires and what it guarantees after.
The backend_* passes belong to the torch.compile backend (randfx.backend).
"""
