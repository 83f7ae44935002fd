from .configuration_mlstm import MLSTMConfig
from .modeling_mlstm import MLSTMCausalLMOutput, MLSTMForCausalLM, MLSTMModel, MLSTMModelOutput, MLSTMPreTrainedModel

__all__ = ["MLSTMConfig", "MLSTMModel", "MLSTMForCausalLM", "MLSTMPreTrainedModel", "MLSTMModelOutput", "MLSTMCausalLMOutput"]
