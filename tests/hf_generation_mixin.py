class GenerationTesterMixin:
    all_generative_model_classes = ()
