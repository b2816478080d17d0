"""vgg_lib: the code behind the interactive companion to the VGG paper.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition" (ICLR 2015). One module per idea of the paper:

=====================  ==========================================================
``configs``            Table 1: configurations A, A-LRN, B, C, D, E (+ B-5x5) as data
``models``             Sect. 2 and 3.2: the VGG module, fully-convolutional form, init
``analysis``           Table 2 and Sect. 2.3: parameters, multiply-adds, receptive fields
``paper``              the paper's published numbers (Tables 1-8, 10-12)
``data``               Sect. 3.1: datasets, the training/test transforms, the training loaders
``options``            Sect. 3.1: ``TrainConfig``, every knob of a training run, and its checks
``loop``               Sect. 3.1 and 3.3: ``fit``, the one SGD loop; its schedule, state and precision
``train``              Sect. 3.1 and 3.3: ``train(cfg)``, one run folder (resume, DDP), the command line
``runs``               run folders: naming, status, atomic writes, ``load_run``, ``collect``, units
``evaluate``           Sect. 3.2 and 4: single-scale, dense, multi-crop, fusion
``localisation``       Appendix A: box regression nets (SCR/PCR), test protocols 1 and 2
``transfer``           Appendix B: very deep features + linear SVM
``experiments``        Tables 3-6 and App. B in miniature: the reference grid (grid.yaml), its results
``stats``              comparisons over seeds (intervals, MDE) and the one verdict against the paper
``jobs``               papermill job runner and grids
``scheduler``          the dependency-aware local scheduler of both grids
``checks``             parameter checks shared by TrainConfig, the jobs and the command lines
``released``           the published ImageNet weights (optional download) evaluated as the paper did
``widgets``            the receptive-field explorer
=====================  ==========================================================
"""

__version__ = "0.1.0"
