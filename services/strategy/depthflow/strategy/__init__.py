"""Strategy service: feature vectors in, trading signals out.

Pure decision logic lives in ``vectors`` (refusals), ``gate`` (cooldown), ``imbalance``,
``models`` (scikit-learn / PyTorch predictors) and ``labels`` (labelling, walk-forward);
I/O lives at the edges: ``app`` (Kafka + PostgreSQL), ``registry`` (model table), ``train``.
"""
