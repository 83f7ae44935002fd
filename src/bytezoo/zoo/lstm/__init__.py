from .configuration_lstm import ByteLSTMConfig
from .modeling_lstm import ByteLSTMCausalLMOutput, ByteLSTMForCausalLM, ByteLSTMModel, ByteLSTMModelOutput, ByteLSTMPreTrainedModel

__all__ = ["ByteLSTMConfig", "ByteLSTMModel", "ByteLSTMForCausalLM", "ByteLSTMPreTrainedModel", "ByteLSTMModelOutput", "ByteLSTMCausalLMOutput"]
