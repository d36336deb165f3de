"""The Gradio app (grids, A/B comparison, blind voting) arrives with issue 5.

For now, inspect a store with `evalsvc status` and open its images folder.
"""

if __name__ == "__main__":
    print("The evalsvc app arrives with a later release; run `evalsvc demo` and `evalsvc status` meanwhile.")
