"""``ExportTesterMixin`` for transformers' ``ModelTesterMixin``, which imports it from ``tests/exporters/test_export.py``,
a file the transformers sdist does not ship (hf_common_tests.py). bytezoo's export checks (torch.export of the causal LM
and the classifier as for inference, then ONNX through onnxruntime) need no download, so they live with the other
Hugging Face conventions in tests/test_zoo_hf_conventions.py (``test_export_for_inference_with_torch_export_and_onnx``)
and run for every family whether or not transformers' tests could be fetched.
"""


class ExportTesterMixin:
    test_torch_exportable = True
