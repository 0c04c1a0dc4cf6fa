"""napari dock widgets (Qt). Each gathers inputs, starts a thread_worker that calls the core,
and puts results into layers on the main thread. No computation lives here."""
