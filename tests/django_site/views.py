import time

from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie


def whoami(request):
    """What Django concluded about the request from what olive sent."""
    return JsonResponse(
        {
            "is_secure": request.is_secure(),
            "host": request.get_host(),
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "x_forwarded_for": request.META.get("HTTP_X_FORWARDED_FOR"),
            "scheme": request.scheme,
            "path": request.path,
            "method": request.method,
        }
    )


@ensure_csrf_cookie
def form(request):
    """GET: a form with a CSRF token. POST (CSRF-checked): echoes `text`."""
    if request.method == "POST":
        return HttpResponse(request.POST.get("text", ""), content_type="text/plain")
    return render(request, "form.html")


@csrf_exempt
def upload(request):
    """The size of the body Django read."""
    return JsonResponse({"size": len(request.body)})


@csrf_exempt
def slow(request):
    """Sleeps for ?ms= milliseconds, then answers."""
    ms = int(request.GET.get("ms", "0"))
    time.sleep(ms / 1000)
    return JsonResponse({"slept_ms": ms})
