"""Apply trained fold models to new patients, from their checkpoints alone.

For researchers who score an external cohort or a collaborator's patients with models trained
here: :mod:`~mmsurv.predict.apply` rebuilds each fold's model and input pipeline from what its
checkpoint records (model, hyper-parameters, genomic columns and scaler, groups, feature
standardisation) and gives each patient's risk per fold, the mean over the folds and a low/high
group at the training cohort's median risk; ``mmsurv predict`` writes them as a table.
"""
