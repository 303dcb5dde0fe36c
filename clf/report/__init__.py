"""`clf report`: one self-contained HTML file of runs, fold groups and a model's mistakes.

sources (what each PATH is), runs (the runs table and overlaid curves), groups (a fold group's folds, CV and OOF
confusion or per-class tag scores), evaluation (a model on labelled images: scores, the worst mistakes, reliability),
evaluation_multilabel (a multi-label model on tagged images: per-class thresholds and scores, the images with a tag
wrong), gradcam (where a CNN looks), preview (the recorded augmentation), images and plots (pictures as inline data),
document (the Jinja2 template and the write), build (all of it, in order). It may import every package below the CLI;
only the CLI imports it.
"""
