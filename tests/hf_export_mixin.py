"""Export checks for transformers' ``ModelTesterMixin`` (which imports ``ExportTesterMixin`` from a file that the
transformers sdist does not ship; see hf_common_tests.py): the causal LM (and the body inside it) and the sequence classifier
through ``torch.export`` with padding in the batch, and the same program through ONNX (``torch.onnx.export(dynamo=True)``, run by onnxruntime) where the ``onnx``,
``onnxscript`` and ``onnxruntime`` packages are installed (they are in the test extra).

An exported graph has fixed shapes (the recurrence over T steps is unrolled at export) and takes ``input_ids`` and
``attention_mask``; under export the models skip their data-dependent shortcuts (a mask that masks nothing, the byte
range check) and the mLSTM runs its plain-PyTorch reference engine.
"""
from __future__ import annotations

import importlib.util
import tempfile
import warnings

import torch


class ExportTesterMixin:
    test_torch_exportable = True

    def _export_inputs(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        mask = inputs["attention_mask"].clone()
        mask[0, :2] = 0  # left padding in the first row: the held positions are part of the graph
        return config, inputs["input_ids"], mask

    def test_torch_export(self):
        """The causal LM (the body inside it) and the sequence classifier through torch.export, as for inference (no
        grad); then the causal LM's program through ONNX and onnxruntime, where those packages are installed (a warning
        says so where they are not)."""
        config, input_ids, mask = self._export_inputs()
        model = self.all_generative_model_classes[0](config).eval()
        with torch.no_grad():  # as for inference: the mLSTM's no-grad weight cache must stay out of the graph
            program = torch.export.export(model, (input_ids,), kwargs={"attention_mask": mask}, strict=False)
        other = torch.randint_like(input_ids, 0, 256)  # the graph is not specialised to the traced values
        for ids in (input_ids, other):
            with torch.no_grad():
                torch.testing.assert_close(program.module()(ids, attention_mask=mask).logits,
                                           model(ids, attention_mask=mask).logits)
        classifier_class = next((c for c in self.all_model_classes if c._auto_class == "AutoModelForSequenceClassification"), None)
        if classifier_class is not None:  # its chunk loop unrolls at export (fixed T)
            classifier = classifier_class(config).eval()
            with torch.no_grad():
                exported = torch.export.export(classifier, (input_ids,), kwargs={"attention_mask": mask}, strict=False)
                torch.testing.assert_close(exported.module()(other, attention_mask=mask).logits,
                                           classifier(other, attention_mask=mask).logits)
        missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
        if missing:
            warnings.warn(f"ONNX export not checked: it needs {', '.join(missing)} (pip install bytezoo[test])", stacklevel=1)
            return
        import onnxruntime

        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own passes
            torch.onnx.export(program, dynamo=True, verbose=False).save(f"{folder}/model.onnx")
            session = onnxruntime.InferenceSession(f"{folder}/model.onnx")
        self.assertEqual([value.name for value in session.get_inputs()], ["input_ids", "attention_mask"])
        logits = session.run(None, {"input_ids": other.numpy(), "attention_mask": mask.numpy()})[0]
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(logits), model(other, attention_mask=mask).logits)
