from tests.factories import login, make_org, make_user


def test_login_page_and_home(client):
    org = make_org()
    user = make_user(org, mfa_on=False)
    assert client.get("/login").status_code == 200
    response = login(client, user)
    assert response.status_code == 302
    home = client.get("/home")
    assert home.status_code == 200
    assert user.display_name in home.text
