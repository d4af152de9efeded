"""Sets the token cookie on pages that rendered `{% olive_comments %}`.

The tag runs while the template renders, too late to add a header itself;
it notes its object on the request and this middleware mints the token
for all of them once the response exists."""

from . import tokens


class OliveTokenMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        objects = getattr(request, "olive_objects", None)
        if objects:
            tokens.set_cookie(request, response, objects)
        return response
