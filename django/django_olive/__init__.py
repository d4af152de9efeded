"""django-olive: live comments for django-contrib-comments, served by olive.

The parts: object keys (`keys`), publishing comments after commit
(`comments`, `publishers`), the recovery endpoint and token refresh
(`views`), token minting and grants (`tokens`, `grants`), the
`{% olive_comments %}` tag, the `olive.js` client, the `olive_persist`
command, and the image-annotation comments app (`django_olive.annotations`).
"""
