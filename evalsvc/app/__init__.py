"""The app's logic (the Gradio layout in `app.py` only wires it): safe file serving first."""
