"""The works the zoo's presets cite (``ModelInfo.paper``), written once for the families that share them."""
RADFORD_2017 = ("Radford, Jozefowicz, Sutskever. Learning to Generate Reviews and Discovering Sentiment. "
                "arXiv:1704.01444 (2017)")
PURI_2018 = ("Puri, Kirby, Yakovenko, Catanzaro. Large Scale Language Modeling: Converging on 40GB of Text in Four "
             "Hours. arXiv:1808.01371 (2018)")
NANOGPT = "Karpathy. nanoGPT (2022), https://github.com/karpathy/nanoGPT: the shakespeare_char configuration"
GPT2 = "Radford, Wu, Child, Luan, Amodei, Sutskever. Language Models are Unsupervised Multitask Learners (2019)"
