from django.shortcuts import get_object_or_404, render

from .models import Note


def note_list(request):
    return render(request, "notes/list.html", {"notes": Note.objects.all()})


def note_detail(request, pk):
    return render(request, "notes/detail.html", {"note": get_object_or_404(Note, pk=pk)})
