"""GFlowNet on the hypergrid: FM, DB, TB and SubTB(lambda), judged by exact dynamic programming.

The entry point is ``models.gflownet.train:train`` (with its ``Config``). It is not re-exported
here: a package attribute named ``train`` would shadow the ``train`` submodule.
"""
