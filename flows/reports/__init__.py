"""What digitflow shows people: pictures, text and pages.

figures      the pictures of a model and its results (matplotlib, PNG)
evaluation   the evaluation as Markdown (Prefect artifacts, model card)
model_card   the README.md every published version carries
pages        `digitflow report`: one self-contained HTML page about a version or predictions
comparison   two versions on the same test set: text, `digitflow models compare`'s page
inline       images inlined as data: URIs; the HTML page skeleton
markdown     Markdown tables
"""
