import lazy_loader as _lazy

# Lazy, so that registering the config with AutoConfig never imports the modeling file (and transformers' models).
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "configuration_gru": ["ByteGRUConfig"],
        "modeling_gru": ["ByteGRUForCausalLM", "ByteGRUForSequenceClassification", "ByteGRUModel",
                         "ByteGRUPreTrainedModel"],
    },
)
