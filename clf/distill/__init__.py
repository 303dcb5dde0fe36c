"""`clf distill`: a student run trained on a deployed teacher's soft predictions.

The composer of the layers: the teacher runs through serve's Predictor (the onnxruntime session and preprocessing
of `clf infer`), a run folder or a fold group is exported first with clf's export library, and the student is an
ordinary run of clf.train.fit handed the teacher (clf.train.distillation.Teacher): train never imports serve.
"""
